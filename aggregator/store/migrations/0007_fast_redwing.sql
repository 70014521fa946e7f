ALTER TABLE `refusals` ADD `kind` text DEFAULT 'hello' NOT NULL;--> statement-breakpoint
ALTER TABLE `refusals` ADD `task_id` text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE `refusals` ADD `round` integer;--> statement-breakpoint
CREATE INDEX `refusals_node` ON `refusals` (`node_id`);