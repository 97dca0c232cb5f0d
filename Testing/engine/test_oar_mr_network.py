"""The GI-tract FCN-ResNet50: torchvision's architecture, without torchvision."""

import torch

from oncoseg.oar.mr.network import FCNResNet50


def test_parameter_count_matches_torchvision_fcn_resnet50():
    """torchvision's fcn_resnet50(num_classes=21, aux_loss=False) has 32,957,013 parameters
    (ResNet-50 without its fc: 23,508,032; FCN head: 9,448,981)."""
    network = FCNResNet50(in_channels=3, classes=21)
    assert sum(p.numel() for p in network.backbone.parameters()) == 23_508_032
    assert sum(p.numel() for p in network.parameters()) == 32_957_013


def test_output_stride_and_shape():
    network = FCNResNet50(in_channels=5, classes=3).eval()
    x = torch.zeros(1, 5, 96, 80)
    with torch.inference_mode():
        features = network.backbone(x)
        out = network(x)
    assert features.shape == (1, 2048, 12, 10)  # output stride 8
    assert out.shape == (1, 3, 96, 80)


def test_a_narrow_network_with_a_gate():
    network = FCNResNet50(in_channels=3, classes=3, width=8, gate=True).eval()
    with torch.inference_mode():
        logits, gate = network(torch.zeros(2, 3, 64, 64))
    assert logits.shape == (2, 3, 64, 64) and gate.shape == (2, 3)
    assert network.backbone.out_channels == 256
