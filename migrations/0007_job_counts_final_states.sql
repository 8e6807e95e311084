-- Custom SQL migration file, put your code below! --
-- job_counts keeps finished jobs only: queued and running ones are counted through the partial
-- indexes jobs_claimable and jobs_running (bounded by the queue and the agents' slots), and the
-- jobs' hot path — insert, claim, retry — then fires no trigger body at all. Measured with
-- triggers on every state (0006): +33 µs per job over enqueue, claim and finish (52 → 85 µs).
DROP TRIGGER `jobs_count_insert`;
--> statement-breakpoint
DROP TRIGGER `jobs_count_state`;
--> statement-breakpoint
DROP TRIGGER `jobs_count_delete`;
--> statement-breakpoint
DELETE FROM `job_counts` WHERE `state` IN ('queued', 'running');
--> statement-breakpoint
CREATE TRIGGER `jobs_count_inserted` AFTER INSERT ON `jobs` WHEN NEW.`state` NOT IN ('queued', 'running') BEGIN
  INSERT INTO `job_counts` (`tenant`, `state`, `n`) VALUES (NEW.`tenant`, NEW.`state`, 1)
    ON CONFLICT (`tenant`, `state`) DO UPDATE SET `n` = `n` + 1;
END;
--> statement-breakpoint
CREATE TRIGGER `jobs_count_ended` AFTER UPDATE OF `state` ON `jobs`
  WHEN NEW.`state` NOT IN ('queued', 'running') AND OLD.`state` IS NOT NEW.`state` BEGIN
  INSERT INTO `job_counts` (`tenant`, `state`, `n`) VALUES (NEW.`tenant`, NEW.`state`, 1)
    ON CONFLICT (`tenant`, `state`) DO UPDATE SET `n` = `n` + 1;
END;
--> statement-breakpoint
CREATE TRIGGER `jobs_count_left` AFTER UPDATE OF `state` ON `jobs`
  WHEN OLD.`state` NOT IN ('queued', 'running') AND OLD.`state` IS NOT NEW.`state` BEGIN
  UPDATE `job_counts` SET `n` = `n` - 1 WHERE `tenant` = OLD.`tenant` AND `state` = OLD.`state`;
END;
--> statement-breakpoint
CREATE TRIGGER `jobs_count_deleted` AFTER DELETE ON `jobs` WHEN OLD.`state` NOT IN ('queued', 'running') BEGIN
  UPDATE `job_counts` SET `n` = `n` - 1 WHERE `tenant` = OLD.`tenant` AND `state` = OLD.`state`;
END;
