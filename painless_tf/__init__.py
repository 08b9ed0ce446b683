"""painless_tf: fully automatic fine-tuning of BERT-family models on Keras 3."""
