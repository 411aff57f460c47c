"""Where a pipeline's files live: one explicit object instead of paths relative to the working folder.

A `Layout` is rooted at the folder a pipeline runs in: the project for `dvc.yaml`, `studies/<name>/`
for a study. Every stage takes one, so nothing depends on the current directory and a study runs
the same stage code in its own folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def here(cls) -> Layout:
        """The working folder, named relatively: messages then name files as the user typed them."""
        return cls(Path())

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def oracle(self) -> Path:
        return self.root / "data" / "oracle"

    @property
    def pseudo(self) -> Path:
        return self.root / "data" / "pseudo"

    @property
    def random_pseudo(self) -> Path:
        """A data-set study's control: random clicks propagated like the Oracle's (howlow.studies.dataset)."""
        return self.root / "data" / "random_pseudo"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def plots(self) -> Path:
        return self.eval / "plots"

    @property
    def figures(self) -> Path:
        return self.eval / "figures"

    @property
    def validation(self) -> Path:
        return self.root / "reports" / "validation"

    @property
    def logs(self) -> Path:
        """How long things took (git-ignored, never a DVC output): outputs stay a pure function of
        their inputs and params, so a rerun or a resumed run gives the same bytes. `track` logs them
        to MLflow."""
        return self.root / "logs"


def project_root(start: Path | None = None) -> Path:
    """The project folder: the nearest folder at or above `start` (default: the working folder) that
    holds `.dvc`; else `start` itself. Relative `data.source` paths are read from here, so a study in
    `studies/<name>/` names the same data folder as the project's params.yaml."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return start
