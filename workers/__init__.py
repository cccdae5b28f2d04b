"""Code that runs inside vecpg's worker processes.

Imports go one way: ``vecpg`` imports ``workers``, never the reverse. Nothing here imports
torch (a test checks ``sys.modules`` in a real worker): only numpy, gymnasium,
cloudpickle and psutil, so a worker costs a few MB beyond its envs.
"""
