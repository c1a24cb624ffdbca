"""dptlearn-grade: grade a class's exercise notebooks (see docs/teaching.md; docs/grading-security.md)."""
