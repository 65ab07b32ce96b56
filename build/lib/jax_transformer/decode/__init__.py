"""Greedy and beam search with the KV cache, and the Translator that loads a run and turns text into text."""
