"""The experiments room: one module per study of the paper's claims.

Each study is a module ``experiments/<name>.py`` with a ``main(argv=None)`` entry
built on :func:`experiments._common.study_parser` (``--quick``, ``--out``,
``--seed``, ``--threads``, ``--no-progress``), run from the project root as::

    .venv/bin/python -m experiments.<name> [--quick] [--out DIR]

Studies use only bcosnet's public API (``create_model``, the trainer,
``explain``, ``bcosnet.attribution``, ``bcosnet.evaluation``) — no private
training loops — and write their results atomically into ``--out``
(default ``outputs/experiments/<name>``; ``--quick`` runs go to ``...-quick``).
Their tests (``tests/experiments/``) run every study with ``--quick``.
"""
