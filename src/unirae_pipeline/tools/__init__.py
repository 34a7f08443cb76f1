"""The command-line tools, run as `python -m unirae_pipeline.tools.<name>`: `compose` (params.yaml from conf/),
`dvc_stages` (dvc.yaml from the pipelines and the catalog), `scratch` (list or prune resumable work), `reconstruct`
(a folder of images through an RAE) and `export_diffusers` (the RAE as a diffusers folder). No stage imports them."""
