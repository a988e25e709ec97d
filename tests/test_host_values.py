import pytest
import torch

from mos_lightning.host_values import LaggedHostScalar


def test_off_the_gpu_the_value_is_ready_at_once_and_detached():
    scalar = LaggedHostScalar()
    assert scalar.ready is None
    x = torch.tensor(2.0, requires_grad=True)
    scalar.push(x * 3)
    assert scalar.ready.item() == 6.0 and not scalar.ready.requires_grad and scalar.ready.device.type == "cpu"
    scalar.push(torch.tensor(1.5))
    assert scalar.ready.item() == 1.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_a_gpu_values_arrive_in_order_without_blocking():
    scalar = LaggedHostScalar()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
    try:
        seen = []
        for step in range(20):
            scalar.push(torch.full((), float(step), device="cuda"))
            if scalar.ready is not None:
                seen.append(scalar.ready.item())  # a CPU tensor: no device sync
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    scalar.push(torch.full((), 20.0, device="cuda"))
    assert seen == sorted(seen) and seen and seen[-1] <= 19
    assert scalar.ready.item() == 19.0  # after a synchronize every earlier copy has landed


def test_slots_must_be_positive():
    with pytest.raises(ValueError):
        LaggedHostScalar(0)
