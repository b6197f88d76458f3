"""Interop with transformers: pretrained backbones in (`load`), whole models out (`export`)."""
