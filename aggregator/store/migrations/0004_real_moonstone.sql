ALTER TABLE `runs` ADD `initial_model_sha256` text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE `runs` ADD `run_signature` text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE `updates` ADD `input_reputation` real;