"""Frozen-encoder evaluation: probes (linear, attentive, decoder, kNN) on downstream tasks."""
