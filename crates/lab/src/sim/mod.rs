//! Seeded whole-cluster simulation (placeholder; being written).
