"""What runs inside a student's sandbox: the nbval grading plugin (``plugin``), the warm-kernel
fork server (``warm``) and its kernel launcher (``launcher``), the sandbox's init (``confine``),
and ``cells``, the notebook metadata both sides read.

The grader copies this package whole into every sandbox (as ``_dptlearn_grading``), so it must
import nothing from the trusted side: only the standard library, itself and, in the plugin and
the fork server, the notebook runtime (pytest, nbval, jupyter_client, ipykernel);
tests/test_architecture.py enforces it.
"""
