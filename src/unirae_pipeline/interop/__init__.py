"""Readers and converters of checkpoints in foreign formats, into this pipeline's modules and statistics: the reference
code's released RAE checkpoints (`official`), transformers' encoder files (`hf_encoders`) and diffusers'
`AutoencoderRAE` folders (`diffusers`). Pure torch; the Kedro datasets over them are `io.official`, the way back to
diffusers is `tools.export_diffusers`."""
