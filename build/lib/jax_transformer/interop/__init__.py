"""The bridges to other frameworks: torch_ref state dicts (safetensors), Hugging Face export, BERT import."""
