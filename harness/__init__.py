"""wschaos harness: supervisor, embedded Toxiproxy, game backend and clients, history, checkers,
scenarios, certification."""

__version__ = "0.1.0"
