"""What differs per task and nothing else: its model, its batches, its loss, its evaluation and its report."""
