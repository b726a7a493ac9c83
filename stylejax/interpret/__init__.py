"""What a trained CNN encodes: receptive fields, the top-patch scan, projections and pictures.

Modules are imported lazily by their users; :mod:`receptive_field` is light, :mod:`scan` pulls in JAX.
"""
