"""Shared test set-up: CPU/CUDA parametrisation and nbval noise control."""
import pytest
import torch

# the cuda case carries the `cuda` mark: `make test-gpu` selects it with -m cuda
DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Every test that takes ``device`` runs on the CPU, and on CUDA where there is one."""
    return torch.device(request.param)


def pytest_collectstart(collector):
    # nbval: stderr carries kernel warnings that vary by machine; shapes and numbers go to stdout
    if getattr(collector, "path", None) is not None and collector.path.suffix == ".ipynb":
        collector.skip_compare += ("stderr",)
