"""The Oracle's science: how few revealed pixels does a from-scratch per-image network need?

    features   the image cues the per-pixel network sees
    networks   the per-pixel MLP (an ensemble, position lattices), many images' networks stacked
    select     the selection rules: which pixels to reveal next
    geodesic   the clicks' geodesic vote
    scorer     the one way a prediction is read (network blended with the vote)
    engine     the one training loop: many images' networks advance in one batched step
    loop       one image's Oracle (score, stop or reveal) and `run_oracle_many`
    replay     the training-order experiment (revealed pixels replayed in other orders)

Nothing here reads or writes files: the pipeline stages (howlow.stages) do.
"""

from .loop import OracleRun, OracleState, image_seed, run_oracle, run_oracle_many
from .networks import oracle_network
from .scorer import Scorer

__all__ = ["OracleRun", "OracleState", "Scorer", "image_seed", "oracle_network", "run_oracle", "run_oracle_many"]
