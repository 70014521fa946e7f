ALTER TABLE `updates` ADD `evidence` text;--> statement-breakpoint
-- Runs recorded before verdicts carried evidence: every rejection then counted against its node.
UPDATE `updates` SET `evidence` = `reason` WHERE `verdict` = 'rejected';