"""Shared test set-up: CPU/CUDA parametrisation and nbval noise control."""
import pytest
import torch

# the cuda case carries the `cuda` mark: `make test-gpu` selects it with -m cuda
DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Every test that takes ``device`` runs on the CPU, and on CUDA where there is one."""
    return torch.device(request.param)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread is as fast and immune to a busy machine's scheduling."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collectstart(collector):
    # nbval: stderr carries kernel warnings that vary by machine; shapes and numbers go to stdout
    if getattr(collector, "path", None) is not None and collector.path.suffix == ".ipynb":
        collector.skip_compare += ("stderr",)

