"""The interactive demo: `python demo.py ckpt=PATH`, then open http://127.0.0.1:7860 (docs/sharing.md)."""

import hydra
from omegaconf import DictConfig

from tinyldm.tasks import demo


@hydra.main(version_base="1.3", config_path="conf", config_name="demo")
def main(cfg: DictConfig) -> None:
    demo.run(cfg)


if __name__ == "__main__":
    main()
