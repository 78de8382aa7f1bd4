"""Fast kernels of AND's equations, each checked in the tests against its plain reference.

The equations live, readable, next to the docstrings that state them:
:mod:`and_plugin.loss` (Eq 2, 3, 7) and :mod:`and_plugin.curriculum` (Eq 1, 5, 6). The modules
here compute the same numbers faster or in less memory, and are dispatched from one place in
those modules; nothing here is needed to understand the method.

- :mod:`.bank_logsumexp`: the softmax denominator of Eq 2 over the whole bank, streamed in
  chunks (an autograd Function) or from one fused attention kernel (verified once per device).
- :mod:`.refresh_tiles`: entropy (Eq 5) and top-k neighbours (Eq 1) of every bank entry in
  symmetric tiles with one shared shift, base-2 exponentials and CPU worker threads.
- :mod:`.gather`: row gathers that refuse bad indices without a host synchronisation.

Kernels import only torch and ``and_plugin._validation``, never the modules that use them.
"""
