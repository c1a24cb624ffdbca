"""dptlearn-grade: grade a class's exercise notebooks (see docs/grading.md)."""
