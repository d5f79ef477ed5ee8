"""fastreid-clip's log lines go wherever FastReID's go (console and ``OUTPUT_DIR/log.txt``).

FastReID's ``setup_logger`` (called by ``default_setup``) configures the ``fastreid`` logger only, so records of the
``fastreid_clip.*`` loggers (stage changes, resuming, weight loading) reached neither the console nor ``log.txt``.
:func:`forward_to_fastreid_logger` gives the ``fastreid_clip`` logger one handler that passes every record to the
``fastreid`` logger's handlers, whatever they are when the record is emitted: a user's own FastReID ``train_net.py``
that calls ``default_setup`` gets our lines in its log without any extra set-up.
"""

from __future__ import annotations

import logging

__all__ = ["forward_to_fastreid_logger"]


class _ForwardToFastReID(logging.Handler):
    """Hands each record to the ``fastreid`` logger (its console and file handlers, or Python's last resort)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger("fastreid").handle(record)


def forward_to_fastreid_logger(level: int = logging.INFO) -> logging.Logger:
    """Route the ``fastreid_clip`` logger through FastReID's logging set-up (idempotent); returns that logger."""
    logger = logging.getLogger("fastreid_clip")
    if not any(isinstance(h, _ForwardToFastReID) for h in logger.handlers):
        logger.addHandler(_ForwardToFastReID())
    if logger.level == logging.NOTSET:
        logger.setLevel(level)
    logger.propagate = False  # the fastreid logger propagates (or not) on its own: no line twice
    return logger
