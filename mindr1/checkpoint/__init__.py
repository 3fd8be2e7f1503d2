"""mindr1.checkpoint: Megatron checkpoint layout I/O (layout), HF safetensors I/O (hf_io), streaming
Megatron read/write (mcore_io) and the converter (convert). Imports nothing heavy."""
