"""Text prompts for the text conditioner: measured attributes, the prompt bank, the tokenizer and the encoder."""
