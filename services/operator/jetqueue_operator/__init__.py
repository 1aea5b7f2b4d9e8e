"""jetqueue operator: reconciles JobQueue resources and runs QueueAction requests (kopf)."""

GROUP = "jetqueue.io"
VERSION = "v1alpha1"
JOBQUEUES = "jobqueues"
QUEUEACTIONS = "queueactions"
