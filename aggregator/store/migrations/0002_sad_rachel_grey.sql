ALTER TABLE `nodes` ADD `declined` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `tasks` ADD `declined_at` integer;--> statement-breakpoint
ALTER TABLE `tasks` ADD `decline_reason` text;