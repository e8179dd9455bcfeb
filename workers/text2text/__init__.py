"""Text-to-text multi-task training for encoder-decoders (T5) and causal decoders (Llama).

Every task is written as a prompt (:mod:`.prompt`) and every label as a short text
(:mod:`.verbalize`), so ONE adapter serves all tasks with no task heads: the loss is the
cross-entropy of the label's tokens (:mod:`.encode` builds the batches), and evaluation
scores the text of every label (:mod:`.scoring`). :mod:`.model` holds the model.

Importing this package is cheap (no torch): :mod:`workers.data` validates verbalizers
from here while reading a task's meta file.
"""
