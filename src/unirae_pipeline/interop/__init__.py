"""Readers and converters of checkpoints in foreign formats, into this pipeline's modules and statistics: the reference
code's released RAE checkpoints (`official`), transformers' encoder files (`hf_encoders`), diffusers' `AutoencoderRAE`
folders (`diffusers_folder`, `diffusers`; `diffusers_export` writes one) and the pretrained files params name, one
reader per consumer (`encoder_weights`, `loss_weights`, `fid_weights`). Pure torch; the Kedro datasets over them are
`io.official`."""
