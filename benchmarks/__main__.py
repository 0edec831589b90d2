"""Runs every benchmark and prints its table: ``python -m benchmarks``."""

from benchmarks import training, weight_matching


def main():
    weight_matching.main()
    training.main()


if __name__ == "__main__":
    main()
