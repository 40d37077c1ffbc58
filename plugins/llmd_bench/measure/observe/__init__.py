"""Evidence collection: PCP host archives, model-server metrics, KV-index stats, and the verdict that a
configuration took effect. Nothing here invents a value: what cannot be measured is reported as such."""
