"""The serving stack: where and how a cell's stack runs (runtime/), its manifests and sizing, the PCP manifests, the
offline tokenizer and the step context that binds a runtime."""
