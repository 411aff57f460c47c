"""The pipeline's stages, one thin module each: a typed `run(params, layout)` that `dvc.yaml`'s
`howlow <stage>` command and the Prefect flow both call. The science lives elsewhere (howlow.oracle,
howlow.segmentation, howlow.data, howlow.validation); a stage reads its inputs, calls it and writes
its outputs atomically."""
