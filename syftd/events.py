"""Every log event name syftd emits, as constants (``area.past_tense``): the vocabulary an operator
greps the journal for. Owns the names only; each module logs its own data under them."""

from __future__ import annotations

# conditions
CONDITIONS_BUS_DISCONNECTED = "conditions.bus_disconnected"
CONDITIONS_BUS_LOST = "conditions.bus_lost"
CONDITIONS_BUS_UNAVAILABLE = "conditions.bus_unavailable"
CONDITIONS_IOKIT_UNAVAILABLE = "conditions.iokit_unavailable"
CONDITIONS_NETLINK_UNAVAILABLE = "conditions.netlink_unavailable"
CONDITIONS_OVERRIDE_CLEARED = "conditions.override_cleared"
CONDITIONS_OVERRIDE_SET = "conditions.override_set"
CONDITIONS_PREPARE_FOR_SLEEP = "conditions.prepare_for_sleep"
CONDITIONS_REFRESH_FAILED = "conditions.refresh_failed"
CONDITIONS_RESUMED = "conditions.resumed"
CONDITIONS_SERVICE_OWNER_CHANGED = "conditions.service_owner_changed"
CONDITIONS_SIMULATED = "conditions.simulated"
CONDITIONS_SIMULATION_ENDED = "conditions.simulation_ended"
CONDITIONS_SLEEP_LOCK_FAILED = "conditions.sleep_lock_failed"
CONDITIONS_SLEEP_LOCK_RELEASED = "conditions.sleep_lock_released"
CONDITIONS_SLEEP_LOCK_TAKEN = "conditions.sleep_lock_taken"
CONDITIONS_SOURCE_FAILED = "conditions.source_failed"
CONDITIONS_SOURCE_SELECTED = "conditions.source_selected"
CONDITIONS_SOURCE_STOP_FAILED = "conditions.source_stop_failed"
CONDITIONS_SOURCE_SWITCHED = "conditions.source_switched"
CONDITIONS_SUBSCRIBER_FAILED = "conditions.subscriber_failed"

# config
CONFIG_DAEMON_TABLE_CHANGED = "config.daemon_table_changed"
CONFIG_RELOAD_FAILED = "config.reload_failed"
CONFIG_RELOADED = "config.reloaded"

# control
CONTROL_LISTENING = "control.listening"
CONTROL_PEER_REFUSED = "control.peer_refused"

# cycle
CYCLE_CRASHED = "cycle.crashed"
CYCLE_DIFF_UNSPOOLED = "cycle.diff_unspooled"
CYCLE_DIFF_UNCOMMITTED = "cycle.diff_uncommitted"
CYCLE_EXPIRING = "cycle.expiring"
CYCLE_FINISHED = "cycle.finished"
CYCLE_STARTED = "cycle.started"
CYCLE_STATE_CHANGED = "cycle.state_changed"

# daemon
DAEMON_FORCED_EXIT = "daemon.forced_exit"
DAEMON_READY = "daemon.ready"
DAEMON_SERVICE_STARTED = "daemon.service_started"
DAEMON_SERVICE_STOP_FAILED = "daemon.service_stop_failed"
DAEMON_SERVICE_STOPPED = "daemon.service_stopped"
DAEMON_STOPPED = "daemon.stopped"
DAEMON_STOPPING = "daemon.stopping"

# flower (a supervised flower-supernode)
FLOWER_REAPER_FAILED = "flower.reaper_failed"
FLOWER_REPLY_SENT = "flower.reply_sent"
FLOWER_SUPERNODE_EXITED = "flower.supernode_exited"
FLOWER_SUPERNODE_JOINED = "flower.supernode_joined"
FLOWER_SUPERNODE_KILLED = "flower.supernode_killed"
FLOWER_SUPERNODE_LEAVING = "flower.supernode_leaving"
FLOWER_SUPERNODE_OUTPUT = "flower.supernode_output"
FLOWER_SUPERNODE_RESTARTING = "flower.supernode_restarting"
FLOWER_SUPERNODE_STARTED = "flower.supernode_started"

# grid
GRID_AUTHENTICATED = "grid.authenticated"
GRID_CONNECTION_RENEWED = "grid.connection_renewed"
GRID_CYCLE_ACCEPTED = "grid.cycle_accepted"
GRID_CYCLE_FINISHED = "grid.cycle_finished"
GRID_CYCLE_REJECTED = "grid.cycle_rejected"
GRID_DOWNLOADED = "grid.downloaded"
GRID_REPORTED = "grid.reported"
GRID_REQUEST_FAILED = "grid.request_failed"
GRID_SPEED_MEASURED = "grid.speed_measured"
GRID_TOKEN_EMPTY = "grid.token_empty"
GRID_TOKEN_LOADED = "grid.token_loaded"
GRID_TOKEN_REFUSED = "grid.token_refused"

# grid_node
GRID_NODE_AVERAGING_FAILED = "grid_node.averaging_failed"
GRID_NODE_AVERAGING_PLAN_IGNORED = "grid_node.averaging_plan_ignored"
GRID_NODE_AVERAGING_SKIPPED = "grid_node.averaging_skipped"
GRID_NODE_CYCLE_COMPLETED = "grid_node.cycle_completed"
GRID_NODE_CYCLE_REJECTED = "grid_node.cycle_rejected"
GRID_NODE_DIFF_REJECTED = "grid_node.diff_rejected"
GRID_NODE_HOSTED = "grid_node.hosted"
GRID_NODE_LISTENING = "grid_node.listening"  # `syftd node serve --json`: the start-up line scripts read
GRID_NODE_LATE_REPORT_IGNORED = "grid_node.late_report_ignored"
GRID_NODE_REPORT_DROPPED = "grid_node.report_dropped"
GRID_NODE_REPORT_RECEIVED = "grid_node.report_received"
GRID_NODE_START_FAILED = "grid_node.start_failed"
GRID_NODE_STARTED = "grid_node.started"
GRID_NODE_STOPPED = "grid_node.stopped"

# history
HISTORY_CORRUPTED = "history.corrupted"
HISTORY_WRITE_FAILED = "history.write_failed"

# identity
IDENTITY_FORGOTTEN = "identity.forgotten"
IDENTITY_RENEWED = "identity.renewed"
IDENTITY_UNREADABLE = "identity.unreadable"

# job
JOB_EXPIRE_REQUESTED = "job.expire_requested"
JOB_FORCE_REQUESTED = "job.force_requested"
JOB_FORCED = "job.forced"
JOB_TRIGGERED = "job.triggered"

# metrics
METRICS_COLLECTOR_FAILED = "metrics.collector_failed"
METRICS_LISTENING = "metrics.listening"

# spool
SPOOL_ADDED = "spool.added"
SPOOL_DISCARDED = "spool.discarded"
SPOOL_QUARANTINED = "spool.quarantined"
SPOOL_RECOVERED = "spool.recovered"
SPOOL_REPORT_ABORTED = "spool.report_aborted"
SPOOL_REPORT_FAILED = "spool.report_failed"
SPOOL_REPORTED = "spool.reported"
SPOOL_TIDY_FAILED = "spool.tidy_failed"

# state directory (foreign entries, the one-daemon lock, leftovers of a killed daemon)
STATE_FOREIGN_MOVED = "state.foreign_moved"
STATE_REFUSED = "state.refused"
STATE_ORPHAN_FLAGS_REMOVED = "state.orphan_flags_removed"
SPOOL_FORMAT_UNKNOWN = "spool.format_unknown"

# trainer
TRAINER_COMPLETED = "trainer.completed"
TRAINER_CRASHED = "trainer.crashed"
TRAINER_CUDA_UNAVAILABLE = "trainer.cuda_unavailable"
TRAINER_DAEMON_GONE = "trainer.daemon_gone"
TRAINER_EXPIRED = "trainer.expired"
TRAINER_FAILED = "trainer.failed"
TRAINER_IDLE_EXITED = "trainer.idle_exited"
TRAINER_MEMORY_EXCEEDED = "trainer.memory_exceeded"
TRAINER_NICE_REFUSED = "trainer.nice_refused"
TRAINER_OUTPUT = "trainer.output"
TRAINER_OUTPUT_DROPPED = "trainer.output_dropped"  # relayed output over the per-cycle limit, counted
TRAINER_PRELOAD_FAILED = "trainer.preload_failed"
TRAINER_PREPARE_FAILED = "trainer.prepare_failed"
TRAINER_PROGRESS_CALLBACK_FAILED = "trainer.progress_callback_failed"
TRAINER_RESULT_RECEIVED = "trainer.result_received"
TRAINER_SCHED_IDLE_REFUSED = "trainer.sched_idle_refused"
TRAINER_SPAWNED = "trainer.spawned"
TRAINER_STARTED = "trainer.started"
TRAINER_STOPPED = "trainer.stopped"
TRAINER_TRACEBACK = "trainer.traceback"
TRAINER_UNAVAILABLE = "trainer.unavailable"
