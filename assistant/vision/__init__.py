"""The patch-sequence transformer: model, training, evaluation."""
