"""Runs every benchmark and prints its table: ``python -m benchmarks``."""

from benchmarks import interpolation, ste, training, weight_matching


def main():
    weight_matching.main()
    interpolation.main()
    training.main()
    ste.main()


if __name__ == "__main__":
    main()
