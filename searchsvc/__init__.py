"""searchsvc: search hyperparameters and prefix architectures for multi-task PEFT.

Importing this package is cheap on purpose: the client SDK lives in
``searchsvc.client`` and must work without torch, Ray or SQLAlchemy installed.
"""

__version__ = "0.1.0"
