"""Examples: a Queue manifest and the task module its workers import."""
