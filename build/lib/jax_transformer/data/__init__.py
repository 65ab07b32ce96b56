"""Input: readers for text / TSV / JSONL / CSV files (errors name file:line), the sentencepiece tokenizer, the TFDS
array_record sources and length-bucketed batching."""
