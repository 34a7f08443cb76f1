"""Pure torch + timm models: frozen encoder, ViT decoder, DiT-DH.

Nothing is re-exported here: a stage's DVC code dependencies are the modules it imports, so importing the package
must not pull in every model (`dvc_stages.code_deps`)."""
