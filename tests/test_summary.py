"""`make repro`'s closing summary prints every set, the data row (no latent metrics) included."""

from cocoins.tools.summary import render


def test_sets_without_a_metric_print_a_dash():
    text = render({"data": {"identity_sim": 0.97, "identity_div": 0.42},
                   "scenes": {"identity_sim": 0.714, "base_identity_sim": 0.631, "identity_div": 0.106,
                              "base_identity_div": 0.406, "latent_sim": 0.8, "base_latent_sim": 0.5,
                              "latent_div": None}})
    header, data, scenes = text.splitlines()
    assert header.split() == ["set", "id", "Sim", "base", "id", "Div", "base", "latent", "Sim", "base", "latent",
                              "Div"]
    assert data.split() == ["data", "0.9700", "-", "0.4200", "-", "-", "-", "-"]
    assert scenes.split() == ["scenes", "0.7140", "0.6310", "0.1060", "0.4060", "0.8000", "0.5000", "-"]
