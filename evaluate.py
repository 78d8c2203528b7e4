"""Evaluate samples or a checkpoint: `python evaluate.py samples=samples.npz dataset=mnist_5k` (docs/sampling.md)."""

import hydra
from omegaconf import DictConfig

from tinyldm.tasks import evaluate
from tinyldm.utils.hydra_job import optimized_metric


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    return optimized_metric(cfg, evaluate.run(cfg))


if __name__ == "__main__":
    main()
