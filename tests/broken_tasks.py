"""A task module that raises while it is imported (``tests.broken_tasks:anything``).

Used by the bad-input suite: a job whose function lives here must end ``failed`` with
a readable error, and the worker that tried to import it must keep serving.
"""

raise RuntimeError("tests.broken_tasks refuses to be imported")
