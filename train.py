"""Train tinyldm: `python train.py model=vqvae +experiment=mnist_cond` (see README.md)."""

import hydra
from omegaconf import DictConfig

from tinyldm.tasks import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train.run(cfg)
    return train.optimized_metric(cfg, metrics)


if __name__ == "__main__":
    main()
