CREATE TABLE `invitations` (
	`token_id` text PRIMARY KEY NOT NULL,
	`max_uses` integer NOT NULL,
	`uses` integer DEFAULT 0 NOT NULL,
	`expires_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `nodes` (
	`node_id` text PRIMARY KEY NOT NULL,
	`public_key` text NOT NULL,
	`status` text DEFAULT 'active' NOT NULL,
	`status_reason` text DEFAULT '' NOT NULL,
	`first_seen` integer NOT NULL,
	`last_seen` integer NOT NULL,
	`capabilities` text NOT NULL,
	`software` text DEFAULT '' NOT NULL,
	`accepted` integer DEFAULT 0 NOT NULL,
	`rejected` integer DEFAULT 0 NOT NULL,
	`reputation` real DEFAULT 1 NOT NULL,
	`verdicts` integer DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE TABLE `refusals` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`at` integer NOT NULL,
	`node_id` text NOT NULL,
	`public_key` text NOT NULL,
	`reason` text NOT NULL
);
--> statement-breakpoint
CREATE TABLE `rounds` (
	`run_id` text NOT NULL,
	`round` integer NOT NULL,
	`attempt` integer NOT NULL,
	`status` text NOT NULL,
	`reason` text DEFAULT '' NOT NULL,
	`selected` integer NOT NULL,
	`participants` integer NOT NULL,
	`examples` integer NOT NULL,
	`accuracy` real,
	`loss` real,
	`model_sha256` text NOT NULL,
	`previous_model_sha256` text DEFAULT '' NOT NULL,
	`round_digest` text DEFAULT '' NOT NULL,
	`aggregator_signature` text DEFAULT '' NOT NULL,
	`started_at` integer NOT NULL,
	`closed_at` integer NOT NULL,
	`seconds` real NOT NULL,
	`overhead_seconds` real NOT NULL,
	PRIMARY KEY(`run_id`, `round`, `attempt`),
	FOREIGN KEY (`run_id`) REFERENCES `runs`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE TABLE `runs` (
	`id` text PRIMARY KEY NOT NULL,
	`experiment_name` text NOT NULL,
	`experiment_json` text NOT NULL,
	`seed` integer NOT NULL,
	`backend` text NOT NULL,
	`aggregator_public_key` text NOT NULL,
	`software` text NOT NULL,
	`status` text NOT NULL,
	`started_at` integer NOT NULL,
	`finished_at` integer
);
--> statement-breakpoint
CREATE TABLE `tasks` (
	`task_id` text PRIMARY KEY NOT NULL,
	`run_id` text NOT NULL,
	`round` integer NOT NULL,
	`node_id` text NOT NULL,
	`issued_at` integer NOT NULL,
	`deadline` integer NOT NULL,
	FOREIGN KEY (`run_id`) REFERENCES `runs`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE TABLE `updates` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`run_id` text NOT NULL,
	`round` integer NOT NULL,
	`task_id` text NOT NULL,
	`node_id` text NOT NULL,
	`num_examples` integer NOT NULL,
	`base_model_sha256` text NOT NULL,
	`update_sha256` text NOT NULL,
	`update_digest` text DEFAULT '' NOT NULL,
	`signature` text DEFAULT '' NOT NULL,
	`metrics` text NOT NULL,
	`verdict` text NOT NULL,
	`weight` real NOT NULL,
	`reason` text DEFAULT '' NOT NULL,
	`received_at` integer NOT NULL,
	`created_at` integer DEFAULT (unixepoch() * 1000) NOT NULL,
	FOREIGN KEY (`run_id`) REFERENCES `runs`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `updates_task_unique` ON `updates` (`task_id`);