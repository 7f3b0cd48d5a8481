"""A stand-in for Windows without Triton: ``PYTHONPATH=bench/no_triton:$PYTHONPATH`` puts this package ahead
of any installed Triton, so ``import triton`` fails as it does on a stock Windows torch (which ships none).

Used to measure the engine without its Triton kernels on a Linux GPU (bench/NOTES.md, e2e no-Triton row) and
by tests/core/test_no_triton.py. It raises ImportError, the exception a missing package gives, so every
``try: import triton`` falls back exactly as it would on Windows.
"""

raise ImportError("No module named 'triton' (bench/no_triton stands in for Windows without Triton)")
