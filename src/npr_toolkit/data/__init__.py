"""Records (docs/design.md §6), readers/writers, grading and the distillation job."""
