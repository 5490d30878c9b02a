"""Small internal helpers shared by several subpackages (not public API).

- ``io``: atomic file writes (bytes, text, JSON, figures);
- ``modules``: eval-mode context, first output, input-encoding and layer lookup,
  frozen parameters, preserved buffers;
- ``validate``: int checks, did-you-mean hints, image-batch checks.
"""
