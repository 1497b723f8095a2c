import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The LWTA tests run tiny models: one intra-op thread is faster than many on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
