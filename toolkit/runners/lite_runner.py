"""Run a .nb model with the Paddle Lite Python runtime: `python lite_runner.py MODEL.nb IN.npy OUT.npy`.

Executed by the converter environment's interpreter (the paddlelite wheel fixes its Python
version), so this file imports nothing from the toolkit and stays Python 3.7 compatible.
"""

import sys


def main(argv):
    import numpy as np
    from paddlelite.lite import MobileConfig, create_paddle_predictor

    model, inp, out = argv
    config = MobileConfig()
    config.set_model_from_file(model)
    predictor = create_paddle_predictor(config)
    predictor.get_input(0).from_numpy(np.load(inp))
    predictor.run()
    np.save(out, predictor.get_output(0).numpy())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
