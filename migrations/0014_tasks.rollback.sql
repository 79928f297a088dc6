-- Undo 0014_tasks: the tasks and their sweep go (a task's result with them).
DROP FUNCTION task_sweep();
DROP TABLE tasks;
