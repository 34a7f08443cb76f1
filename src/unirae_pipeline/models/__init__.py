"""Pure torch + timm models: frozen encoder, ViT decoder, DiT-DH."""

from .decoder import DecoderConfig, ViTDecoder, decoder_from_blob
from .dit import DiTConfig, DiTDH, build_dit, dit_from_blob
from .encoder import EncoderConfig, FrozenEncoder

__all__ = ["DecoderConfig", "DiTConfig", "DiTDH", "EncoderConfig", "FrozenEncoder", "ViTDecoder", "build_dit",
           "decoder_from_blob", "dit_from_blob"]
